"""The Payment service: charges users for orders and records the transactions."""
