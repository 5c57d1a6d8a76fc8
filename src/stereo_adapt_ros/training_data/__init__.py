"""Training data made or fetched for pretraining: the library of real photographs
(``photos``, fetched from PyPI and Debian packages), stereo made from single photographs
(``photo_stereo``), the procedural world (``synthetic``), the harsh development sequences
(``harsh``) and per-view augmentation (``augment``). Only training and the command line import
it; the adapter and the node never do."""
