"""Training a unetgen network from folders of images and masks: the paper's recipe (``unetgen train``)."""
