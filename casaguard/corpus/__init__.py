"""Real crash reproducers (``reproducers``, ``crashers``) and simulated MSs (``simulate``)."""
