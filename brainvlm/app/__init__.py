"""The face: the command line, the notebook runner, the params contract and the notebooks' report helpers.
The library never imports it."""
