"""The lifecycle (managed) node, driven through its real lifecycle services (~/change_state,
~/get_state) over DDS kept on loopback, on frames of the real Motorcycle pair: nothing is
subscribed or published before activate; configure refuses bad weights with the reason and
stays unconfigured; activate brings disparity; deactivate stops it; cleanup releases what
configure made; shutdown works from any state."""

import pytest
from ros_harness import Client, NodeProcess, domain_for, small_pan, use_loopback_here

from stereo_adapt_ros.network import load_model, save_weights

pytestmark = pytest.mark.ros

OUTPUT_TIMEOUT_S = 60.0


class Lifecycle:
    """The lifecycle services of /stereo_adapt, called from the test client's node."""

    def __init__(self, client: Client) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.client = client
        self._change = client.node.create_client(ChangeState, "/stereo_adapt/change_state")
        self._get = client.node.create_client(GetState, "/stereo_adapt/get_state")

    def _call(self, service, request):
        assert service.wait_for_service(timeout_sec=60), "no lifecycle services"
        future = service.call_async(request)
        assert self.client.wait(future.done, 60), f"no answer from {service.srv_name}"
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState
        return self._call(self._get, GetState.Request()).current_state.label

    def change(self, label: str) -> bool:
        """Trigger the transition ``label`` (configure, activate, ...); whether it succeeded."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        request = ChangeState.Request(transition=Transition(label=label))
        return self._call(self._change, request).success


def input_subscriptions(client: Client) -> list[int]:
    """How many subscribers each input topic has (the node's, seen from the test's publishers)."""
    return [publisher.get_subscription_count() for publisher in client.pub.values()]


@pytest.mark.slow
def test_lifecycle_transitions_through_the_services(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    model, info, _ = load_model("random", seed=11)
    weights = tmp_path / "weights.safetensors"
    save_weights(weights, model.state_dict(), info)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    domain = domain_for(61)
    node = NodeProcess(domain, {"weights": str(bad), "adaptation_mode": "none"},
                       tmp_path / "node.log", lifecycle=True)
    client = Client(domain, outputs=("disparity",))
    lifecycle = Lifecycle(client)
    statuses: list[object] = []
    client.node.create_subscription(DiagnosticArray, "/stereo_adapt/status", statuses.append, 10)
    frame = small_pan(1)[0]
    stamp = [1_800_000_000 * 10**9]

    def pair_comes_out() -> bool:
        """Publish the pair with a new stamp; whether its disparity comes back."""
        stamp[0] += 10**8
        client.publish(frame.left, frame.right, stamp[0])
        return client.wait(lambda: stamp[0] in client.received["disparity"], 5)

    try:
        assert lifecycle.state() == "unconfigured", node.log()
        assert input_subscriptions(client) == [0, 0, 0, 0]
        assert client.node.count_publishers("/disparity") == 0

        # Bad weights: configure fails with one line saying why; the node stays up and
        # unconfigured, and configures once its weights parameter is good.
        assert not lifecycle.change("configure")
        assert lifecycle.state() == "unconfigured" and node.alive()
        failed = [line for line in node.log().splitlines() if "configure failed" in line]
        assert len(failed) == 1, node.log()
        assert "[ERROR]" in failed[0] and f"cannot load weights {str(bad)!r}" in failed[0]
        assert "Traceback" not in node.log()
        ok, reason = client.control.set("weights", str(weights))
        assert ok, reason
        assert lifecycle.change("configure"), node.log()
        assert lifecycle.state() == "inactive"

        # Inactive: the outputs exist but publish nothing, the inputs are not subscribed.
        assert client.wait(lambda: client.node.count_publishers("/disparity") == 1, 10)
        client.wait(lambda: False, 2.5)  # status comes at 1 Hz while active
        assert input_subscriptions(client) == [0, 0, 0, 0]
        assert not statuses

        assert lifecycle.change("activate"), node.log()
        assert lifecycle.state() == "active"
        assert client.wait(lambda: min(input_subscriptions(client)) == 1, 10), node.log()
        client.wait(lambda: False, 0.5)
        assert pair_comes_out(), node.log()
        assert client.wait(lambda: bool(statuses), 5)

        # Deactivated: the inputs go, and with them the output.
        assert lifecycle.change("deactivate"), node.log()
        assert lifecycle.state() == "inactive"
        assert client.wait(lambda: max(input_subscriptions(client)) == 0, 10), node.log()
        statuses.clear()
        assert not pair_comes_out()
        assert not statuses

        # Cleanup releases what configure made; configure and activate again work.
        assert lifecycle.change("cleanup"), node.log()
        assert lifecycle.state() == "unconfigured"
        assert client.wait(lambda: client.node.count_publishers("/disparity") == 0, 10)
        assert lifecycle.change("configure") and lifecycle.change("activate"), node.log()
        assert client.wait(lambda: min(input_subscriptions(client)) == 1, 10), node.log()
        client.wait(lambda: False, 0.5)
        assert pair_comes_out(), node.log()

        # Shutdown from active: finalized, inputs and outputs gone, the process still answers.
        assert lifecycle.change("shutdown"), node.log()
        assert lifecycle.state() == "finalized"
        assert client.wait(lambda: max(input_subscriptions(client)) == 0
                           and client.node.count_publishers("/disparity") == 0, 10)
        assert node.alive()
    finally:
        client.close()
        assert node.stop() == 0, node.log()


@pytest.mark.parametrize("transitions", [(), ("configure",), ("configure", "activate")])
def test_shutdown_works_from_every_state(transitions):
    """In this process, through the node's own transition calls: shutdown from unconfigured,
    inactive and active reaches finalized and leaves no worker, network or input behind."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn

    from stereo_adapt_ros.ros.node import StereoAdaptLifecycleNode

    use_loopback_here()
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-p", "weights:=random",
                                      "-p", "num_threads:=1"],
               domain_id=domain_for(67))
    node = StereoAdaptLifecycleNode(context=context)
    try:
        for transition in transitions:
            assert getattr(node, f"trigger_{transition}")() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert node._state_machine.current_state[1] == "finalized"
        assert node._worker is None and node._inputs is None and not node._made
        assert not hasattr(node, "adapter")
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
