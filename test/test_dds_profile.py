"""The shipped Fast DDS profile carries large images between real ROS processes on loopback.

Two processes (this file run as a script) exchange 640x480 rgb8 images, about 1 MB each, at
10 Hz for 3 s over best-effort sensor-data QoS, with the environment the Makefile and the
README prescribe. Without the profile's 64 MiB shared-memory segment, such images fall back to
fragmented UDP and nearly all are lost (1 of 30 arrived when measured on the development
machine); with it, all arrive.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

PROFILE = Path(__file__).resolve().parents[1] / 'config' / 'fastdds_loopback.xml'
TOPIC = 'dds_profile_check/image'
WIDTH, HEIGHT = 640, 480
FRAMES = 30
RATE_HZ = 10.0
MATCH_TIMEOUT_S = 5.0
SUBSCRIBER_DEADLINE_S = 12.0
PROCESS_TIMEOUT_S = 18.0
# DDS well-known ports (RTPS spec 9.6.1.1): PB + DG * domain + offsets, all below PB + DG.
PORT_BASE, DOMAIN_GAIN = 7400, 250


def _domain_id():
    """A domain for this run only: from this process id, and not the one the caller uses."""
    caller = os.environ.get('ROS_DOMAIN_ID', '')
    domain = os.getpid() % 100 + 1
    if str(domain) == caller:
        domain = domain % 100 + 1
    return domain


def _loopback_env(domain):
    env = dict(os.environ)
    env.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
        FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE),
        RMW_IMPLEMENTATION='rmw_fastrtps_cpp',
        ROS_DOMAIN_ID=str(domain),
        PYTHONUNBUFFERED='1',
    )
    return env


def _own_udp_sockets():
    """(address, port) of every IPv4 UDP socket this process holds, read from /proc."""
    inodes = set()
    for fd in Path('/proc/self/fd').iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[len('socket:['):-1])
    sockets = []
    for line in Path('/proc/net/udp').read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            address_hex, port_hex = fields[1].split(':')
            address = '.'.join(str(b) for b in reversed(bytes.fromhex(address_hex)))
            sockets.append((address, int(port_hex, 16)))
    return sockets


def run_publisher():
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('dds_profile_publisher')
    publisher = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    # The subscriber's side of the match can lag the publisher's by a few milliseconds.
    time.sleep(0.3)
    message = Image(height=HEIGHT, width=WIDTH, encoding='rgb8', step=3 * WIDTH)
    for index in range(FRAMES):
        message.header.frame_id = str(index)
        message.data = bytes([index % 256]) * (3 * WIDTH * HEIGHT)
        publisher.publish(message)
        time.sleep(1.0 / RATE_HZ)
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber():
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    received = []

    def on_image(message):
        index = int(message.header.frame_id)
        intact = (
            len(message.data) == 3 * WIDTH * HEIGHT
            and message.data[0] == message.data[-1] == index % 256
        )
        received.append((index, intact))

    rclpy.init()
    node = rclpy.create_node('dds_profile_subscriber')
    node.create_subscription(Image, TOPIC, on_image, qos_profile_sensor_data)
    deadline = time.monotonic() + SUBSCRIBER_DEADLINE_S
    while time.monotonic() < deadline and (not received or received[-1][0] < FRAMES - 1):
        rclpy.spin_once(node, timeout_sec=0.05)
    sockets = _own_udp_sockets()
    node.destroy_node()
    rclpy.shutdown()
    print(json.dumps({'received': received, 'udp_sockets': sockets}))


@pytest.mark.slow
def test_large_images_cross_processes_on_loopback():
    domain = _domain_id()
    env = _loopback_env(domain)
    start = time.monotonic()
    subscriber = subprocess.Popen(
        [sys.executable, __file__, 'subscribe'], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen(
        [sys.executable, __file__, 'publish'], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pub_out, pub_err = publisher.communicate(timeout=PROCESS_TIMEOUT_S)
        sub_out, sub_err = subscriber.communicate(
            timeout=max(1.0, PROCESS_TIMEOUT_S - (time.monotonic() - start)))
    finally:
        for process in (publisher, subscriber):
            if process.poll() is None:
                process.kill()
                process.wait()

    logs = f'publisher:\n{pub_out}{pub_err}\nsubscriber:\n{sub_out}{sub_err}'
    assert publisher.returncode == 0, logs
    assert subscriber.returncode == 0, logs
    # Fast DDS reports a profile it cannot load as 'XMLPARSER Error' and carries on without it.
    assert 'XMLPARSER' not in pub_err + sub_err, logs

    report = json.loads(sub_out.strip().splitlines()[-1])
    received = report['received']
    indices = [index for index, _ in received]
    assert len(set(indices)) >= 0.9 * FRAMES, f'{len(set(indices))}/{FRAMES} images arrived\n{logs}'
    assert all(intact for _, intact in received), 'an image arrived truncated or corrupted'

    # The profile's UDP transport binds the domain's well-known ports on 127.0.0.1 only.
    # (rmw_fastrtps adds its own transports in LOCALHOST mode, whose unused send sockets
    # may bind other addresses: only the listening ports show what the profile does.)
    first_port = PORT_BASE + DOMAIN_GAIN * domain
    listening = [(address, port) for address, port in report['udp_sockets']
                 if first_port <= port < first_port + DOMAIN_GAIN]
    assert listening, f'no DDS port of domain {domain} open: {report["udp_sockets"]}'
    assert all(address == '127.0.0.1' for address, _ in listening), listening


if __name__ == '__main__':
    {'publish': run_publisher, 'subscribe': run_subscriber}[sys.argv[1]]()
