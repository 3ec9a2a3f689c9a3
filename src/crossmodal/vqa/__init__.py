"""Knowledge-based VQA: PICa prompting and the official scoring rules."""
