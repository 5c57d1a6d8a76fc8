"""stereo_adapt_ros: dense stereo depth from MADNet, adapted online without labels.

Layout, bottom up (a package imports only those below it): ``options`` (how a configuration
declares its options) and ``files`` (atomic file writes), ``data`` (datasets, image codecs,
file formats) and ``network`` (MADNet), ``matching`` (traditional matchers: SGBM, AD, census,
and their confidence) and ``training_data`` (the photo library, rendered scenes and
augmentation for pretraining), ``adaptation`` (losses, proxy labels, block sampling, the online
adapter), ``evaluation`` (metrics, sequence runner, benchmark), ``training``, ``ros`` (the ROS
node), ``cli`` (the ``stereo-adapt`` command). None but ``ros`` imports ROS.
"""
