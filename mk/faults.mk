# fault-injection suite targets
