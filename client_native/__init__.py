"""The native (CPython + torch) client: builds the torch module from the model spec and trains locally."""
