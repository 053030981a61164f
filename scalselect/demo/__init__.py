"""The bundled demo (:mod:`scalselect.demo.build`) and the tiny offline models that the
demo and the tests run (:mod:`scalselect.demo.tinymodels`): fixtures, not the method."""
