"""ROS 2 glue for dmnet: the segmentation node, image conversion and the rosbag replay harness."""
