"""merpo-agent: MerPO / RAC (ICLR 2022), batched over tasks.

``merpo_agent.load_policy(run_dir, task=None, device="cpu")`` gives a trained run's policy
as a callable ``obs -> action`` (``merpo_agent.policy``; imported on first use, so
``import merpo_agent`` stays light).
"""

__all__ = ["load_policy"]


def __getattr__(name: str):
    if name == "load_policy":
        from merpo_agent.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'merpo_agent' has no attribute {name!r}")
