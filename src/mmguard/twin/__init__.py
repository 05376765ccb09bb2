"""Robot digital twin: MuJoCo workcells generating paired camera and kinematic-sensor data (issue #4)."""
