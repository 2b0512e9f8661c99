"""Block types: the maths of one style layer each. Built-ins register through entry points."""
