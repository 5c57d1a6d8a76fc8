from glob import glob
from pathlib import Path
from xml.etree import ElementTree

from setuptools import find_packages, setup

PACKAGE = 'stereo_adapt_ros'
HERE = Path(__file__).resolve().parent
# package.xml is the single source of the version, so that colcon and pip agree.
VERSION = ElementTree.parse(HERE / 'package.xml').getroot().findtext('version')

setup(
    name=PACKAGE,
    version=VERSION,
    package_dir={'': 'src'},
    packages=find_packages('src'),
    # Installed below <prefix>/share/stereo_adapt_ros, where ROS tools
    # (ament_index_python, ros2 launch) look for them.
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', sorted(glob('launch/*.py'))),
        (f'share/{PACKAGE}/config', sorted(p for p in glob('config/*') if Path(p).is_file())),
        (f'share/{PACKAGE}/models',
         sorted(glob('models/*.safetensors') + glob('models/*.md'))),
    ],
    python_requires='>=3.10',
    # torch is deliberately absent: it must be installed first, as the right build for the
    # machine (the CPU wheel, the user's CUDA build, or NVIDIA's Jetson wheel). A bare
    # 'torch' requirement lets pip replace that build or, with no torch installed, pull a
    # multi-GB CUDA build. The package checks for torch when it is imported instead.
    # The ROS 2 Python packages (rclpy, message packages) come from the ROS install or,
    # without one, from the ros-* wheels the Makefile installs.
    install_requires=[
        'numpy>=2',  # np.bitwise_count
        'opencv-python-headless',
        'safetensors',
        'scikit-image',
        'rosbags',
        'tqdm',
    ],
    extras_require={
        'test': ['pytest', 'matplotlib', 'ruff>=0.17,<0.18', 'mypy>=2.4,<3'],
        'plot': ['matplotlib'],
    },
    zip_safe=True,
    maintainer='stereo_adapt_ros maintainers',
    maintainer_email='stereo-adapt-ros@users.noreply.github.com',
    description='Self-supervised online adaptation of a deep stereo network for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'stereo-adapt = stereo_adapt_ros.cli.main:main',
            'stereo_adapt_node = stereo_adapt_ros.cli.node_command:main',
            'stereo_adapt_lifecycle_node = stereo_adapt_ros.cli.node_command:lifecycle_main',
        ],
    },
)
