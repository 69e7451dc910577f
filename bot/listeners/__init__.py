"""Bolt listeners, one module per kind or feature, each with `register(app)` that only wires
top-level handlers. bot.wiring lists the modules and registers them in order; importing a
module here registers nothing.
"""
