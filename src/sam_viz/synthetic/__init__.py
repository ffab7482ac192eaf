"""Generated images with exact masks: training scenes and microscopy fields."""
