"""The Order service: takes orders and follows each one's payment saga to its end."""
