"""Transport floor for bench/node_latency.py: a node that only forwards, in fusion_node's place.

Subscribes ``rgb/image_raw`` and ``thermal/image_raw`` like ``fusion_node`` (best effort, depth
5) and, once both frames of a stamp have arrived, republishes the received RGB message unchanged
on ``fused/image`` and the thermal one on ``fused/segmentation`` (reliable, depth 2, as the node
publishes). No decoding, pairing policy, conversion, inference or worker thread: what is left is
the cost of two DDS hops through a Python node with rclpy's executor on this machine, measured
in the same run as the fusion node so that the difference is what the node itself adds.

    python bench/relay_node.py [--ros-args ...]
"""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ssvif_ros.runtime import tune_malloc


class RelayNode:
    """Forward each RGB/thermal pair with equal stamps; keep at most ``keep`` unpaired frames."""

    def __init__(self, node, keep: int = 5):
        out_qos = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE)
        self._pub = (node.create_publisher(Image, 'fused/image', out_qos),
                     node.create_publisher(Image, 'fused/segmentation', out_qos))
        self._waiting = ({}, {})  # per stream: stamp -> message
        self._keep = keep
        self._subs = [node.create_subscription(Image, topic, self._callback(i),
                                               qos_profile_sensor_data)
                      for i, topic in enumerate(('rgb/image_raw', 'thermal/image_raw'))]

    def _callback(self, stream: int):
        def cb(msg):
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            partner = self._waiting[1 - stream].pop(stamp, None)
            if partner is None:
                waiting = self._waiting[stream]
                waiting[stamp] = msg
                while len(waiting) > self._keep:
                    waiting.pop(min(waiting))
                return
            rgb, thermal = (msg, partner) if stream == 0 else (partner, msg)
            self._pub[0].publish(rgb)
            self._pub[1].publish(thermal)
        return cb


def main(args=None) -> int:
    """Run until SIGINT."""
    tune_malloc()  # as the fusion node does
    rclpy.init(args=args)
    node = rclpy.create_node('fusion_node')
    RelayNode(node)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
