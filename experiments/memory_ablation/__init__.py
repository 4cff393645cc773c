"""The memory ablation: does each of DMNet's memories earn its place? See README.md here."""
