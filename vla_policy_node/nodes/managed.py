"""The ROS 2 node lifecycle for the graph's nodes (rclpy.lifecycle, lifecycle_msgs).

configure builds the node (robot file, model, topics, services), activate lets it publish or
command, deactivate stops that (the executor disarms: the arm holds), cleanup destroys what
configure built and frees the model; shutdown does what deactivate and cleanup do. With the
parameter `autostart` (default true) a node configures and activates itself at start, as a
plain node would; a bringup graph sets it false and lets the lifecycle manager
(nodes/lifecycle_manager.py) bring the nodes up in order.

A node's parameters (its `PARAMETERS` table, nodes/parameters.py) are declared once, when it is
constructed, so a second configure (after cleanup) reads them again instead of declaring them
again; a parameter declared twice is an error naming the node and the parameter.
"""

from __future__ import annotations

from rclpy.exceptions import ParameterAlreadyDeclaredException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .parameters import CONFIG_ERROR_EXIT, Param, ParameterDeclaredTwice, declare

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE

AUTOSTART = Param("autostart", True, "configure and activate at start (true), or start unconfigured and wait for "
                                     "the lifecycle manager or `ros2 lifecycle set` (false)")


class ManagedNode(LifecycleNode):
    """Subclasses list their parameters in `PARAMETERS` (read them in `setup()` through
    `self.params`), put their construction in `setup()` and may override `activated()`,
    `deactivated()` and `teardown()`; `self.active` tells whether output is allowed."""

    PARAMETERS: tuple[Param, ...] = ()

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.active = False
        self.configured = False
        self.exit_code = 0
        self._owned: list = []
        self.params = declare(self, (AUTOSTART, *self.PARAMETERS))
        declare(self, self.more_parameters())
        if self.params.autostart:
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

    def more_parameters(self) -> tuple[Param, ...]:
        """Parameters that depend on the values of `PARAMETERS` (the policy's backend options),
        declared at construction right after them."""
        return ()

    def declare_parameters(self, namespace, parameters, ignore_override=False):
        """rclpy's, with a parameter declared twice named with its node (configure runs setup()
        again after cleanup: parameters belong in PARAMETERS, declared once)."""
        try:
            return super().declare_parameters(namespace, parameters, ignore_override)
        except ParameterAlreadyDeclaredException:
            names = [(f"{namespace}." if namespace else "") + (p[0] if isinstance(p, tuple) else p)
                     for p in parameters]
            raise ParameterDeclaredTwice(self, [n for n in names if self.has_parameter(n)]) from None

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
        except ParameterDeclaredTwice as exc:
            self.get_logger().fatal(str(exc))
            self._destroy(self._entities() - before)
            return FAILURE
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
