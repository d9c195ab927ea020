"""What people see: the terminal output of ``askdraw ask``, the ``askdraw chat`` session and the
``askdraw serve`` web page, all rendering a Result the same way (:mod:`agent.ui.render`)."""
