"""Storage access shared by everyone who touches bytes: the pilot, the DDM bridge,
the server.

It sits at the bottom of the package graph beside ``catalog`` and imports
nothing else of ours, so ``pip install dawms[pilot]`` brings it without any
server dependency. ``checksum`` computes size and adler32 while streaming;
``movers`` maps a URL scheme to a mover (fsspec-based, lazily imported);
``paths`` builds deterministic file paths under an endpoint's root;
``plugins`` is the small lazy registry the movers and the pilot factories use.
"""
