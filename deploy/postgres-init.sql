-- The Payment service's database, next to paysaga_order (POSTGRES_DB) on first start.
CREATE DATABASE paysaga_payment OWNER paysaga;
