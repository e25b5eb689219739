# services targets
