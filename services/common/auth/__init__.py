"""`python -m services.common.auth token ...`: the development-token command under the name it
had before the layout moved it to services.common.security.devtokens (scripts call it so).

May import services.common.security; nothing imports it.
"""
