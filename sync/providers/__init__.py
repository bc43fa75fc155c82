"""Calendar channels: one module per provider, serializers beside them."""
