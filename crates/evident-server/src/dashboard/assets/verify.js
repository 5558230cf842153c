"use strict"; // Proof verification lands in a later commit.
