# The whole system: Kafka plus both services, in the background.

.PHONY: up down ps
up: check-prereqs venv tools kafka-up ## start Kafka and both services (only what is not running)
	@$(PY) -m deploy.stack up
	@echo
	@echo "paysaga is up. Try (grpcurl is in .tools/bin):"
	@echo "  .tools/bin/grpcurl -plaintext -d '{\"user_id\":1,\"product_id\":1}' 127.0.0.1:50051 paysaga.v1.OrderService/CreateOrder"
	@echo "  .tools/bin/grpcurl -plaintext -d '{}' 127.0.0.1:50051 paysaga.v1.OrderService/ListOrders"
	@echo "  .tools/bin/grpcurl -plaintext -d '{\"user_id\":1}' 127.0.0.1:50052 paysaga.v1.PaymentService/GetBalance"
	@echo "  .tools/bin/grpcurl -plaintext -d '{}' 127.0.0.1:50051 paysaga.v1.OrderService/WatchOrders"
	@echo "Logs: var/log/{order,payment,kafka}.log   Status: make ps   Stop: make down"

down: ## stop both services and Kafka
	@if [ -x $(PY) ]; then $(PY) -m deploy.stack down; fi
	@$(MAKE) kafka-down

ps: venv ## show what runs
	@$(PY) -m deploy.stack ps
	@if [ -f var/run/kafka.pid ] && kill -0 $$(cat var/run/kafka.pid) 2>/dev/null; then \
	  echo "kafka    running                pid=$$(cat var/run/kafka.pid)"; \
	else echo "kafka    stopped"; fi
