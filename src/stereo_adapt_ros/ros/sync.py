"""Time synchronisation of several message streams, and the explanation of why sets do not form.

``make_synchronizer`` uses message_filters where it is installed (every ROS 2 install has it);
where it is not (the pip-only environment), the built-in ``ExactTimeSync`` and
``ApproximateTimeSync`` below, which follow message_filters' Python ``TimeSynchronizer`` and
``ApproximateTimeSynchronizer`` (ROS 2 Humble-Kilted) rule for rule.
"""

from __future__ import annotations

import copy
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.subscription import Subscription

from ..data.bag import stamp_ns

Callback = Callable[..., None]
#: What an unbounded approximate sync (tolerance 0, stereo_image_proc's meaning) gives
#: message_filters, whose Python synchroniser needs a finite slop: about 11.6 days.
UNBOUNDED_SLOP_S = 1e6


class ExactTimeSync:
    """Calls ``callback(*messages)`` when every input has a message with the same stamp.

    Each input keeps at most ``queue_size`` stamps (the oldest is dropped), as message_filters'
    TimeSynchronizer does.
    """

    def __init__(self, inputs: int, queue_size: int, callback: Callback) -> None:
        if inputs < 1 or queue_size < 1:
            raise ValueError("need at least one input and a queue size >= 1")
        self.queue_size = queue_size
        self.callback = callback
        self._queues: list[dict[int, Any]] = [{} for _ in range(inputs)]
        self._lock = threading.Lock()

    def add(self, index: int, message: Any) -> None:
        ready = []
        with self._lock:
            queue = self._queues[index]
            queue[stamp_ns(message)] = message
            while len(queue) > self.queue_size:
                del queue[min(queue)]
            common = set(self._queues[0]).intersection(*self._queues[1:])
            for stamp in sorted(common):
                ready.append([q.pop(stamp) for q in self._queues])
        for messages in ready:
            self.callback(*messages)


class ApproximateTimeSync:
    """Calls ``callback(*messages)`` with one message per input whose stamps all lie within
    ``slop`` seconds of each other, searched around each newly arrived message (message_filters'
    Python ApproximateTimeSynchronizer rule: the candidates closest to the new message are tried
    first, and the first set whose spread is below ``slop`` is emitted and removed). A ``slop``
    of ``math.inf`` is unbounded: the nearest stamps pair, however far apart.
    """

    def __init__(self, inputs: int, queue_size: int, slop: float, callback: Callback) -> None:
        if inputs < 1 or queue_size < 1 or not slop >= 0:
            raise ValueError("need at least one input, a queue size >= 1 and a slop >= 0")
        self.queue_size = queue_size
        self.slop_ns: float = math.inf if math.isinf(slop) else round(slop * 1e9)
        self.callback = callback
        self._queues: list[dict[int, Any]] = [{} for _ in range(inputs)]
        self._lock = threading.Lock()

    def add(self, index: int, message: Any) -> None:
        stamp = stamp_ns(message)
        with self._lock:
            queue = self._queues[index]
            queue[stamp] = message
            while len(queue) > self.queue_size:
                del queue[min(queue)]
            candidates = []
            for other, other_queue in enumerate(self._queues):
                if other == index:
                    continue
                near = sorted((abs(s - stamp), s) for s in other_queue
                              if abs(s - stamp) <= self.slop_ns)
                if not near:
                    return
                candidates.append([s for _, s in near])
            chosen = None
            for combination in itertools.product(*candidates):
                stamps = list(combination)
                stamps.insert(index, stamp)
                spread = max(stamps) - min(stamps)
                if spread < self.slop_ns or spread == 0:
                    chosen = stamps
                    break
            if chosen is None:
                return
            messages = [q.pop(s) for q, s in zip(self._queues, chosen)]
        self.callback(*messages)


class StreamMonitor:
    """Counts messages per input and remembers their last stamps, to explain in the log why
    synchronised sets are not forming."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.counts = [0] * len(names)
        self.last_stamps: list[int | None] = [None] * len(names)
        self._unpaired_since: float | None = None
        self._last_message: float | None = None  # time.monotonic() of the latest message
        self._explained_at_count = 0
        self._lock = threading.Lock()

    def record(self, index: int, message: Any) -> None:
        with self._lock:
            self.counts[index] += 1
            self.last_stamps[index] = stamp_ns(message)
            self._last_message = time.monotonic()
            if self._unpaired_since is None:
                self._unpaired_since = self._last_message

    def paired(self) -> None:
        """A synchronised set formed: every message so far is accounted for."""
        with self._lock:
            self._unpaired_since = None

    def stalled(self, min_age: float) -> bool:
        """Whether messages have waited ``min_age`` seconds without forming a set, with new
        messages since the last time this returned True (so a stream that stopped is not
        explained over and over)."""
        with self._lock:
            total = sum(self.counts)
            if (self._unpaired_since is None or time.monotonic() - self._unpaired_since < min_age
                    or total == self._explained_at_count):
                return False
            self._explained_at_count = total
            return True

    def unpaired_age(self) -> float | None:
        """Seconds since the oldest message that has not formed a set arrived (None when every
        message so far is accounted for). Unlike ``stalled``, it changes nothing."""
        with self._lock:
            since = self._unpaired_since
        return None if since is None else time.monotonic() - since

    def input_age(self) -> float | None:
        """Seconds since the latest message on any input (None before the first)."""
        with self._lock:
            last = self._last_message
        return None if last is None else time.monotonic() - last

    def explain(self, approximate: bool, slop: float) -> str:
        """Why no set formed: which inputs are silent, or how far apart the latest stamps are."""
        with self._lock:
            counts, stamps = list(self.counts), list(self.last_stamps)
        silent = [name for name, count in zip(self.names, counts) if count == 0]
        if silent:
            heard = [name for name, count in zip(self.names, counts) if count] or ["nothing"]
            return (f"no message received yet on {', '.join(silent)} "
                    f"(received on: {', '.join(heard)}); check the topic names, remappings "
                    "and QoS (input_reliability)")
        known = [s for s in stamps if s is not None]
        spread = (max(known) - min(known)) / 1e9
        listing = ", ".join(f"{name} {stamp / 1e9:.6f}" for name, stamp in zip(self.names, known))
        within = "any time apart" if slop == 0 else f"within {slop:g} s"
        rule = (f"approximate sync needs them {within} (approximate_sync_tolerance_seconds)"
                if approximate
                else "exact sync needs equal stamps; set approximate_sync:=true if the cameras "
                     "are not hardware-synchronised")
        return f"latest stamps are {spread:.6f} s apart ({listing}); {rule}"


@dataclass
class InputSubscriptions:
    """The subscriptions ``make_synchronizer`` made, and the synchroniser that holds them
    together (kept here, alive, for as long as they are)."""

    implementation: str  # "message_filters" or "built-in"
    subscriptions: list[Subscription]
    synchronizer: Any

    def destroy(self, node: Node) -> None:
        """Unsubscribe: the node's subscriptions go, and with them its place on the topics."""
        for subscription in self.subscriptions:
            node.destroy_subscription(subscription)
        self.subscriptions = []


def make_synchronizer(node: Node, *, message_types: Sequence[type], topics: Sequence[str],
                      qos: QoSProfile, approximate: bool, queue_size: int, slop: float,
                      callback: Callback, monitor: StreamMonitor) -> InputSubscriptions:
    """Subscribe to ``topics`` and call ``callback`` with each synchronised set.

    Uses message_filters when importable, else the built-in synchronisers. Every message also
    goes to ``monitor``. ``slop`` is the approximate sync's tolerance in seconds, 0 for
    unbounded (stereo_image_proc's ``approximate_sync_tolerance_seconds``). The subscriptions
    take the standard ``qos_overrides.<topic>.subscription.*`` parameters over ``qos``.
    Returns the subscriptions, to unsubscribe with ``InputSubscriptions.destroy``.
    """
    try:
        import message_filters
    except ImportError:
        message_filters = None
    overrides = QoSOverridingOptions.with_default_policies()
    # rclpy writes a topic's overrides into the profile it is given: one copy per topic.
    if message_filters is not None:
        subscribers = [message_filters.Subscriber(node, kind, topic, qos_profile=copy.copy(qos),
                                                  qos_overriding_options=overrides)
                       for kind, topic in zip(message_types, topics)]
        for index, subscriber in enumerate(subscribers):
            subscriber.registerCallback(lambda msg, i=index: monitor.record(i, msg))
        if approximate:
            sync = message_filters.ApproximateTimeSynchronizer(
                subscribers, queue_size, slop if slop > 0 else UNBOUNDED_SLOP_S)
        else:
            sync = message_filters.TimeSynchronizer(subscribers, queue_size)
        sync.registerCallback(callback)
        # message_filters.Subscriber keeps its rclpy subscription as .sub (Humble to Kilted).
        return InputSubscriptions("message_filters", [s.sub for s in subscribers],
                                  (subscribers, sync))
    builtin = (ApproximateTimeSync(len(topics), queue_size, slop if slop > 0 else math.inf,
                                   callback) if approximate
               else ExactTimeSync(len(topics), queue_size, callback))

    def on_message(message: Any, index: int) -> None:
        monitor.record(index, message)
        builtin.add(index, message)

    subscriptions = [node.create_subscription(kind, topic, lambda msg, i=index: on_message(msg, i),
                                              copy.copy(qos), qos_overriding_options=overrides)
                     for index, (kind, topic) in enumerate(zip(message_types, topics))]
    return InputSubscriptions("built-in", subscriptions, builtin)
