"""LingBot-VA family: configuration, modeling (the two-stream transformer and its cache), policy
(the backend, with forward-dynamics-grounded asynchronous inference) and training."""

from .configuration_lingbot_va import LingBotVAConfig
from .policy_lingbot_va import LingBotVAPipeline, LingBotVAPolicy as Policy
from .training_lingbot_va import LingBotVATrainer as Trainer

__all__ = ["LingBotVAConfig", "LingBotVAPipeline", "Policy", "Trainer"]
