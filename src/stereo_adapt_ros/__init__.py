"""stereo_adapt_ros: dense stereo depth from MADNet, adapted online without labels.

Layout: ``network`` (MADNet), ``adaptation`` (losses, block sampling, the online adapter),
``data`` (datasets, image codecs, file formats), ``evaluation`` (metrics, SGBM, sequence
runner), ``cli`` (the ``stereo-adapt`` command). None of these import ROS; the ROS node lives
in ``ros``.
"""
