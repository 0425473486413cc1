"""Reading and writing: safe unpickling, CAM formats, images and label PNGs."""
