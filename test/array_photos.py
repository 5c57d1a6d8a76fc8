"""A photo source for the tests: a fixed list of photographs instead of a fetched library."""

import torch


class ArrayPhotos:
    """A fixed list of H x W x 3 uint8 photographs, drawn uniformly (a ``PhotoSource``)."""

    def __init__(self, images):
        self.images = list(images)

    def pick(self, generator: torch.Generator):
        return self.images[int(torch.randint(0, len(self.images), (), generator=generator))]
