"""Runs services.common.security.devtokens under its earlier module name."""

import sys

from services.common.security.devtokens import token_command

if __name__ == "__main__":
    sys.exit(token_command())
