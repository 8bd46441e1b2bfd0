"""Publishing a finished run to the Hugging Face Hub: the plan (what goes up) and the push (one commit)."""
