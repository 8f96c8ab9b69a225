"""Use cases of the Bookstore: catalog, cart, checkout, best sellers, search, identity."""
