"""Images larger than the model input, and objects smaller than it: windows at an object scale."""
