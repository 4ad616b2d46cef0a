"""LingBot-VA family: configuration, modeling (the two-stream transformer and its cache), policy
(the backend, with forward-dynamics-grounded asynchronous inference); training (training_lingbot_va.py)
is found through models/registry.py, so loading the backend loads no training code."""

from .configuration_lingbot_va import LingBotVAConfig
from .policy_lingbot_va import LingBotVAPipeline, LingBotVAPolicy as Policy

__all__ = ["LingBotVAConfig", "LingBotVAPipeline", "Policy"]
