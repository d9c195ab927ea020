"""askdraw tools: one module per tool (ASR, Wikipedia, LLM, answer, image prompt, diffusion).

Each module works on its own, without the agent; heavy models load lazily on first use.
"""
