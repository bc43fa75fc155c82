"""calsync: keeps mentoring sessions on people's calendars.

The session record is the truth; calendar events and emailed invites are
projections of it that calsync creates, updates, withdraws and repairs.
"""
