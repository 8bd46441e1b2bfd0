"""TRL trainers over the generated datasets: SFT, DPO, reward model, PPO."""
