"""The ROS 2 node lifecycle for the graph's nodes (rclpy.lifecycle, lifecycle_msgs).

configure builds the node (robot file, model, topics, services), activate lets it publish or
command, deactivate stops that (the executor disarms: the arm holds), cleanup destroys what
configure built and frees the model; shutdown does what deactivate and cleanup do. With the
parameter `autostart` (default true) a node configures and activates itself at start, as a
plain node would; a bringup graph sets it false and lets the lifecycle manager
(nodes/lifecycle_manager.py) bring the nodes up in order.
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
CONFIG_ERROR_EXIT = 2          # the graph runner does not restart a node that refused its configuration


class ManagedNode(LifecycleNode):
    """Subclasses put their construction in `setup()` and may override `activated()`,
    `deactivated()` and `teardown()`; `self.active` tells whether output is allowed."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.active = False
        self.configured = False
        self.exit_code = 0
        self._owned: list = []
        if bool(self.declare_parameter("autostart", True).value):
            if self.trigger_configure() != SUCCESS:
                raise SystemExit(CONFIG_ERROR_EXIT)
            self.trigger_activate()

    # ---- what a node provides ---------------------------------------------------------------
    def setup(self) -> None:
        """Build the node; raise SystemExit after logging a fatal, named error when it cannot."""

    def activated(self) -> None:
        """Output starts."""

    def deactivated(self) -> None:
        """Output stops."""

    def teardown(self) -> None:
        """Release what setup() holds besides ROS entities (threads, the model)."""

    def declare_parameter(self, name, value=None, *args, **kwargs):
        """A parameter declared again by a second configure keeps its value."""
        if self.has_parameter(name):
            return self.get_parameter(name)
        return super().declare_parameter(name, value, *args, **kwargs)

    # ---- transitions ------------------------------------------------------------------------
    def _entities(self) -> set:
        return {*self.publishers, *self.subscriptions, *self.timers, *self.services, *self.clients,
                *self.waitables}

    def _destroy(self, entities) -> None:
        for entity in entities:
            for destroy in (self.destroy_publisher, self.destroy_subscription, self.destroy_timer,
                            self.destroy_service, self.destroy_client):
                try:
                    if destroy(entity):
                        break
                except (TypeError, AttributeError):
                    continue
            else:
                if hasattr(entity, "destroy"):      # action servers and clients
                    entity.destroy()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        before = self._entities()
        try:
            self.setup()
        except SystemExit:
            self._destroy(self._entities() - before)
            return FAILURE
        self._owned = list(self._entities() - before)
        self.configured = True
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.activated()
        self.get_logger().info("active")
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self.deactivated()
        self.get_logger().info("inactive")
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.teardown()
        self._destroy(self._owned)
        self._owned, self.configured = [], False
        return SUCCESS

    def close(self) -> None:
        """At process exit (run_node): release what configure built."""
        if self.configured:
            self.teardown()
            self.configured = False

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.active:
            self.active = False
            self.deactivated()
        if self.configured:
            self.teardown()
            self.configured = False
        return SUCCESS
