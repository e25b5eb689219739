# contract targets
