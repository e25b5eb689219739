"""Local PostgreSQL for paysaga: `python -m deploy.postgres up|down|clean|status|url|check`.

Owns one real server from the machine's own binaries: finding them (install), the
unprivileged account it runs as under root (account), its data folder and settings
(data_folder), role paysaga and its databases (databases), the server process (runtime)
and the command line (cli, __main__).

May import the standard library and deploy's own packages (deploy.kafka.install for the
port check). deploy sits above services and gen and may import them; services never
import deploy.
"""
