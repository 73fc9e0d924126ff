"""merpo-agent: MerPO / RAC (ICLR 2022), batched over tasks."""
