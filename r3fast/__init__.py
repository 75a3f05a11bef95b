"""r3fast: Reflect, Retry, Reward (Bensal et al., 2025), fast.

Public API:
    r3fast.verify          check_countdown, check_function_calls, explain_* and explain_*_batch
    r3fast.tasks           get_task, load_instances; every task verifies with task.judge_batch
    r3fast.kernels         fused_linear_grpo_loss, grpo_loss, selective_logprobs
    r3fast.TrainingSample  the record of one trained sequence, from rollout to loss
    r3fast.Episode         the TrainingSample one reflection produces, with its retries
    r3fast.SamplingParams  what rollout engines take
"""

from importlib.metadata import PackageNotFoundError, version

from r3fast.episode import Episode, TrainingSample
from r3fast.rollout.base import Completion, SamplingParams

try:
    __version__ = version("r3fast")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["Completion", "Episode", "SamplingParams", "TrainingSample", "__version__"]
