"""Email: the iMIP invite builder, header folding, and the SMTP/file transport."""
