"""idcs-example: the example engine of the OpenIDCS plugin author's guide (engine type ``ExampleLab``)."""
