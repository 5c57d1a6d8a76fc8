"""The ROS 2 layer: the node, input synchronisation, message conversion, replay and control.

Everything that imports rclpy lives here; it converts messages and calls the library.
"""
