"""What every PostgreSQL connection of the dispatcher shares: how it is opened (timeouts on every
session) and how a call to it is awaited (never longer than its bound). psycopg is imported only
when a connection is made."""
