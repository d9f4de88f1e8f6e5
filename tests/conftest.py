import sys

# The PyPI samna is an installer stub that reaches for the network when imported. Make any
# import of it fail at once, so a test that touched it fails loudly instead of hanging.
sys.modules["samna"] = None
