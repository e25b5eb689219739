# kafka targets
