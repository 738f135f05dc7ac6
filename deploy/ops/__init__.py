"""Operations: the one `python -m deploy` command line (cli) and bringing the fleet up, showing
its status and taking it down under supervisord (fleet, supervisor).

May import anything in deploy.
"""
