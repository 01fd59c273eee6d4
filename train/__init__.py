"""Training stage (TRL SFT, LoRA or full). Arrives with the training issue."""
