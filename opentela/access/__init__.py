"""Who may join, claim and call: the authority key, join tokens and what they admit."""
